"""`rtctl job`: submit, inspect, list and cancel trajectory jobs."""

from __future__ import annotations

import argparse
from typing import Any

from control.api import JOB_STATES
from control.cli.common import (
    Formatter,
    Report,
    add_client_command,
    connect,
    fmt,
    int_in,
    render_doc,
)

NAME = "job"
HELP = "submit, inspect, list and cancel trajectory jobs"

MAX_LIST_LIMIT = 1000
MAX_JOB_ID = 2**63 - 1


def add(commands: Any) -> None:
    job = commands.add_parser(
        NAME,
        help=HELP,
        description="Trajectory jobs: the agent queues them and the RT loop follows them "
        "one after the other.",
        formatter_class=Formatter,
    )
    jobs = job.add_subparsers(dest="job_command", metavar="COMMAND", required=True)
    submit = add_client_command(
        jobs,
        "submit",
        _submit,
        "queue a trajectory job from a JSON or CSV file",
        "Queue the trajectory in FILE. JSON: "
        '{"name": "...", "waypoints": [{"t": 0.5, "q": [0.1, 0.2]}, ...]}. CSV: one '
        'waypoint per line, "t,q0,q1,..."; an optional header line of those names; "#" '
        "starts a comment. t is seconds from the job's start (> 0, increasing), q one "
        "target per joint (1..8 joints, |q| <= 1000); 1..64 waypoints. The file is "
        "checked here first, so an error names its line.",
        "  rtctl job submit pick.csv --name pick-1",
    )
    submit.add_argument("file", metavar="FILE", help="the job file (.json or .csv)")
    submit.add_argument("--name", help="job name (default: the file's 'name', else its base name)")
    get = add_client_command(
        jobs,
        "get",
        _get,
        "one job's state and progress",
        "Show one job: its name, state (queued, running, done, failed, cancelled) and "
        "whatever else the agent records about it.",
        "  rtctl job get 12 --json",
    )
    get.add_argument("id", type=int_in(1, MAX_JOB_ID), metavar="ID", help="the job's id")
    lst = add_client_command(
        jobs,
        "list",
        _list,
        "the jobs the agent knows",
        "List jobs, optionally only those in one state. --json prints them as one JSON array.",
        "  rtctl job list --state queued --limit 10",
    )
    lst.add_argument("--state", choices=JOB_STATES, help="only jobs in this state")
    lst.add_argument(
        "--limit",
        type=int_in(1, MAX_LIST_LIMIT),
        help=f"at most this many jobs, 1..{MAX_LIST_LIMIT} (default: the agent's, 100)",
    )
    cancel = add_client_command(
        jobs,
        "cancel",
        _cancel,
        "cancel a queued or running job",
        "Cancel a job: a queued one never runs; a running one stops where it is and "
        "the loop holds position.",
        "  rtctl job cancel 12",
    )
    cancel.add_argument("id", type=int_in(1, MAX_JOB_ID), metavar="ID", help="the job's id")


def _submit(args: argparse.Namespace) -> Report:
    # the file checker shares its limits with the RT task (rtcore.reftask, numpy):
    # loaded by this command only
    from control.jobs.trajectory import parse_job_file

    name, waypoints = parse_job_file(args.file)
    with connect(args) as client:
        job = client.submit_job(args.name or name, waypoints)
    return job, lambda j: f"job {j.get('id')} {j.get('state', 'submitted')}: {j.get('name')}"


def _get(args: argparse.Namespace) -> Report:
    with connect(args) as client:
        return client.get_job(args.id), render_doc


def _list(args: argparse.Namespace) -> Report:
    with connect(args) as client:
        return client.list_jobs(args.state, args.limit), _render_jobs


def _cancel(args: argparse.Namespace) -> Report:
    with connect(args) as client:
        job = client.cancel_job(args.id)
    return job, lambda j: f"job {j.get('id')} {j.get('state')}: {j.get('name')}"


def _render_jobs(jobs: list[dict]) -> str:
    if not jobs:
        return "no jobs"
    rows = [("ID", "STATE", "NAME")]
    rows += [(fmt(j.get("id")), fmt(j.get("state")), fmt(j.get("name"))) for j in jobs]
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    return "\n".join(f"{r[0]:>{width[0]}}  {r[1]:<{width[1]}}  {r[2]}" for r in rows)
