# Local stack and checks. `make up KNOWN_FACES=<file> STUDENT_DATA=<json>` serves another
# dataset; without them the stack keeps what it served before (the built-in sample at first).
PYTHON := .venv/bin/python
STACK := $(PYTHON) -m facepipe_tools.stack
STACK_ARGS := $(if $(KNOWN_FACES),--known-faces "$(KNOWN_FACES)") \
              $(if $(STUDENT_DATA),--student-data "$(STUDENT_DATA)")

.PHONY: all install up down status lint test test-fast demo bench chaos images accuracy

all: test

install:
	bash scripts/install.sh

up: install
	$(STACK) up $(STACK_ARGS)

down:
	@if [ -x $(PYTHON) ]; then $(STACK) down; else echo "nothing to stop (no $(PYTHON))"; fi

status:
	$(STACK) status

lint: install
	$(PYTHON) -m ruff check .

# Everything: lint, unit, deployment and integration tests (real Ceph RGW, the images built
# and run with podman; about 15 minutes, 18 with a new .venv and the images built from nothing).
test: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -p no:cacheprovider

# The quick loop: lint, unit and deployment tests on two cores, no stack (about 3 minutes).
test-fast: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -p no:cacheprovider -n 2 tests/unit tests/deploy

# Both functions: the video sample for face recognition, then the photo sample for image
# classification, each uploaded to its input bucket, checked, and posted to the web tier.
demo: install
	$(STACK) up --known-faces data/known_faces.json --student-data data/student_data.json
	$(PYTHON) workload/workload.py
	$(PYTHON) checker/check.py --mapping data/sample_mapping --wait 300
	$(PYTHON) workload/workload.py --http "$$(sed -n 's/^WEB_URL=//p' .env)" --mapping data/sample_mapping
	$(PYTHON) workload/workload.py --images
	$(PYTHON) checker/check.py --mapping data/sample_image_mapping --wait 120
	$(PYTHON) workload/workload.py --http "$$(sed -n 's/^WEB_URL=//p' .env)classify" --mapping data/sample_image_mapping
	@echo
	@web=$$(sed -n 's/^WEB_URL=//p' .env); \
	  echo "Web tier:     $$web   (curl -F inputFile=@clip.mp4 $$web)"; \
	  echo "Classify:     $${web}classify   (curl -F inputFile=@photo.jpg $${web}classify)"; \
	  echo "Results page: $${web}results"
	@echo "The stack is still running (settings in .env, logs in .stack/log/). Stop it with: make down"

# The two functions' and the notifier's images from their Dockerfiles, with rootful podman, a Debian base
# made by mmdebstrap and a wheelhouse (no registry is needed; see docs/deploy.md, "Images").
# For tests only: a placeholder stands in for of-watchdog. The last line is one JSON object.
images: install
	$(PYTHON) -m facepipe_tools.images $(IMAGES_ARGS)

# Benchmark on its own stack (temporary folder, free ports, stopped at the end). CSE546 data
# from ../shared/cse546 or $CSE546_DIR; options: make bench BENCH_ARGS="--rounds 5 --workers 2".
# The last line of its output is one JSON object.
bench: install
	$(PYTHON) scripts/bench.py $(BENCH_ARGS)

# Does the face function find every face of every valid file? Material made at run time in a
# temporary folder (a classroom of 8 faces at 3 scales, a face shown 1 s between keyframes of
# long-GOP files up to 60 s, one clip in each container ffmpeg writes), run in process (no
# stack), CSE546 too when present: recall and precision per case, false truncations; exit 1
# when a target is missed (about 95 s of CPU, 2 minutes on 2 idle cores). Options: make accuracy
# ACCURACY_ARGS="--json report.json --folder /tmp/acc --group gop --no-cse546".
accuracy: install
	$(PYTHON) -m facepipe_tools.accuracy $(ACCURACY_ARGS)

# Faults, bad input and security on its own stack (temporary folder, free ports, stopped at
# the end), CSE546 data from ../shared/cse546 or $CSE546_DIR; options:
# make chaos CHAOS_ARGS="--videos 30 --scenario rgw-restart". The last line is one JSON object.
chaos: install
	$(PYTHON) scripts/chaos.py $(CHAOS_ARGS)
