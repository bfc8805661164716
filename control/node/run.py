"""`rtctl agent`: run a node in the foreground, or write its systemd unit."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from loguru import logger

from control import config as config_mod
from control.config import AgentConfig
from control.errors import ControlError, InvalidArgument
from control.node import logsetup
from control.node.agent import Agent
from control.placement import systemd
from control.placement.placement import PlacementStore


def write_systemd_unit(cfg: AgentConfig, path: str) -> int:
    """The unit runs the agent with these settings, saved as DATA_DIR/agent.toml."""
    config_path = os.path.join(cfg.data_dir, "agent.toml")
    with open(config_path, "w") as f:
        f.write(config_mod.to_toml(cfg))
    saved = PlacementStore(os.path.join(cfg.data_dir, "placement.json")).load()
    cpus = saved.cpus if saved else cfg.cpus
    node = saved.numa_node if saved else cfg.numa_node
    text = systemd.unit_text(cfg, ["--config", config_path], cpus, node)
    if path == "-":
        print(text, end="")
        return 0
    try:
        systemd.write_unit(path, text)
    except OSError as e:
        print(f"rtctl agent: error: cannot write {path}: {e.strerror}", file=sys.stderr)
        return 1
    systemd.remember_path(cfg.data_dir, path)
    print(
        f"rtctl agent: wrote {path} (settings in {config_path}); "
        f"run 'systemctl daemon-reload && systemctl enable --now {os.path.basename(path)}'"
    )
    return 0


def main(args: argparse.Namespace) -> int:
    """`rtctl agent`: run a node in the foreground until SIGTERM/SIGINT."""
    try:
        cfg = config_mod.load(args)
        os.makedirs(cfg.data_dir, exist_ok=True)
    except InvalidArgument as e:
        print(f"rtctl agent: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(
            f"rtctl agent: error: cannot use data directory {cfg.data_dir}: {e.strerror}",
            file=sys.stderr,
        )
        return 2
    if getattr(args, "systemd_unit", None):
        return write_systemd_unit(cfg, args.systemd_unit)
    logsetup.configure(cfg.data_dir, cfg.log_level)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        agent = Agent(cfg)
    except ControlError as e:
        print(f"rtctl agent: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"rtctl agent: error: {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    try:
        agent.start()
    except Exception as e:  # noqa: BLE001 - e.g. the port is taken: one line, then clean up
        agent.close(stop_rt=False)
        print(f"rtctl agent: error: {e}", file=sys.stderr)
        return 1
    print(f"rtctl agent: node {cfg.node_id} serving on {cfg.listen}", flush=True)
    refused = ""
    while not stop.wait(0.2):
        refused = agent.cluster.refused if agent.cluster is not None else ""
        if refused:
            break
    logger.info("stopping: RT to SAFE, then stopped")
    agent.close(stop_rt=True)
    if refused:
        print(f"rtctl agent: error: the cluster refused this node: {refused}", file=sys.stderr)
        return 2
    return 0
