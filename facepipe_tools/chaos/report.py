"""The chaos run's report: a table per part and, as its last line, one JSON object."""

from __future__ import annotations

import json

from facepipe_tools.chaos.bad_input import CaseResult
from facepipe_tools.chaos.memory import WORKER_RSS_LIMIT_MB, MemoryResult, memory_table
from facepipe_tools.chaos.poison import PoisonResult
from facepipe_tools.chaos.scenarios import SCENARIOS, ScenarioResult


def scenario_table(rows: list[ScenarioResult]) -> str:
    header = ("scenario", "videos", "images", "results", "lost", "dup", "wrong", "reproc", "fault at", "down", "last",
              "max wait", "recover_s")  # fmt: skip
    lines = [header]
    for row in rows:
        reprocessed = "-" if row.reprocessed is None else str(row.reprocessed)
        lines.append((
            row.name, str(row.videos), str(row.images), str(row.results), str(row.lost), str(row.duplicated),
            str(row.wrong), reprocessed, secs(row.fault_at_s), secs(row.down_s), secs(row.last_answer_s),
            secs(row.max_wait_s), secs(row.recover_s),
        ))  # fmt: skip
    return _columns(lines)


def secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _columns(lines: list[tuple[str, ...]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for number, line in enumerate(lines):
        out.append("  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(line)))
        if number == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def bad_input_table(rows: list[CaseResult]) -> str:
    lines = [("case", "result", "what / why it failed")]
    for row in rows:
        lines.append((row.name, "ok" if row.passed else "FAILED", row.detail or row.what))
    return _columns(lines)


def bad_input_counts(bad: list[CaseResult], memory: MemoryResult | None = None) -> dict[str, int]:
    """Kinds of bad input tried and not handled: the bad-input suite's cases (not its checks
    of the service afterwards) and the memory scenario's hostile files."""
    cases = [row for row in bad if not row.check]
    hostile = memory.files if memory is not None else 0
    return {
        "bad_inputs_tried": len(cases) + hostile,
        "bad_inputs_failed": sum(not row.passed for row in cases) + (len(memory.failed) if memory else 0),
        "checks_failed": sum(not row.passed for row in bad if row.check),
    }


def summary_json(
    scenarios: list[ScenarioResult],
    bad: list[CaseResult],
    memory: MemoryResult | None = None,
    poison: PoisonResult | None = None,
) -> str:
    summary: dict[str, object] = {
        "scenarios": [row.to_json() for row in scenarios if row.name in SCENARIOS],
        **bad_input_counts(bad, memory),
    }
    if memory is not None:
        summary["memory"] = memory.to_json()
    if poison is not None:
        summary["poison"] = poison.to_json()
    return json.dumps(summary)


def poison_line(poison: PoisonResult) -> str:
    state = "dead-lettered" if poison.poison_answer == "failed" and poison.stamped else "NOT dead-lettered"
    return (
        f"Poison: the poison object {state} after {poison.attempts} failed attempts (DEAD_LETTER_ATTEMPTS "
        f"{poison.dead_letter_attempts}; {poison.kills} of them killed a worker), {poison.attempts_after} more "
        f"after its event was replayed and the notifier restarted; {poison.worker_restarts} worker restarts; "
        f"{poison.answered}/{poison.videos} other videos answered right; {poison.seconds} s"
    )


def print_report(
    scenarios: list[ScenarioResult],
    bad: list[CaseResult],
    elapsed_s: float,
    memory: MemoryResult | None = None,
    poison: PoisonResult | None = None,
) -> None:
    print()
    if scenarios:
        print("Faults: times in seconds from the first upload; last = when the last clip got its answer;")
        print("max wait = longest upload-to-answer time of a clip; recover_s = last - the baseline's last")
        print(scenario_table(scenarios))
    for row in scenarios:
        if row.note:
            print(f"  {row.name}: {row.note}")
        for problem in row.problems[:20]:
            print(f"  {row.name}: {problem}")
    if memory is not None:
        print()
        print(f"Memory ({memory.answered}/{memory.files} answered, {len(memory.failed)} not as expected, "
              f"{memory.worker_restarts} worker restarts; peak worker RSS {memory.max_worker_rss_mb} MiB, "
              f"limit {WORKER_RSS_LIMIT_MB} MiB)")  # fmt: skip
        print(memory_table(memory))
    if poison is not None:
        print()
        print(poison_line(poison))
        if poison.poison_detail:
            print(f"  its error record: {poison.poison_detail[:200]}")
        for problem in poison.problems[:20]:
            print(f"  poison: {problem}")
    if bad:
        print()
        print(f"Bad input ({sum(r.passed for r in bad)}/{len(bad)} handled)")
        print(bad_input_table(bad))
    counts = bad_input_counts(bad, memory)
    if bad or memory is not None:
        print()
        print(f"Kinds of bad input tried: {counts['bad_inputs_tried']} (bad-input cases and hostile files), "
              f"{counts['bad_inputs_failed']} not handled")  # fmt: skip
    print()
    print(f"chaos: {elapsed_s:.0f} s in all")
    print(summary_json(scenarios, bad, memory, poison), flush=True)
