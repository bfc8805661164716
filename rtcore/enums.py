"""Enum values of include/rtcore/layout.h, without numpy: the RT process
imports them at start-up, the control plane through rtcore.layout.
tests/rtcore/test_layout.py checks them against the header."""

MODE_RUN, MODE_HOLD, MODE_SAFE, MODE_STOP = 0, 1, 2, 3
STATE_NAMES = {0: "init", 1: "run", 2: "hold", 3: "safe", 4: "stopped", 5: "fault"}
STATE_NAMES_INV = {v: k for k, v in STATE_NAMES.items()}
DEGRADED_BITS = {1: "mlock", 2: "affinity", 4: "sched_fifo", 8: "numa", 16: "pm_qos"}
WAKE_MODES = {"sleep": 0, "hybrid": 1}
LEVELS = {"DEBUG": 10, "INFO": 20, "WARN": 30, "ERROR": 40, "CRITICAL": 50}
EV_STARTED, EV_STATE, EV_DEADLINE_MISS, EV_CMD_ACK, EV_ACTUATING, EV_ADOPTED = 1, 2, 3, 5, 6, 7
EV_TASK = 100
CMD_NOP = 0
CMD_TASK = 100
TRACE_SAMPLED = 1
SPAN_KINDS = {0: "internal", 1: "server", 2: "client", 3: "producer", 4: "consumer"}
SPAN_STATUS = {0: "unset", 1: "ok", 2: "error"}
JOURNAL_START, JOURNAL_END = 1, 2
CKPT_SHADOW = 1
