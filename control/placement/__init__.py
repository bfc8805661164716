"""Where the RT runs: CPU affinity and isolation, NUMA placement, the systemd unit."""
