"""OpenFaaS python3-http handler: classify one photo of the input bucket (ImageNet-1k, top 5).

Request shapes and HTTP statuses are those of every facepipe function (facepipe/handlers.py):
200 with the labels, 422 with an error record for anything that is not a readable photo, 400,
404, 503 (retry) and 500 (configuration error, such as a missing CLASSIFIER_MODEL, or a bug).
"""

from facepipe.classify.task import ImageClassificationTask
from facepipe.handlers import ObjectHandler

object_handler = ObjectHandler(ImageClassificationTask)

handle = object_handler.handle
function = object_handler.function
warm_up = object_handler.warm_up
not_ready_reason = object_handler.not_ready_reason
