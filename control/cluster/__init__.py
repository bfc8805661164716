"""The cluster: pysyncobj membership, the quorum lease, roles and fencing,
and what is replicated through Raft (checkpoints, jobs, settings)."""
