"""The device mesh's keys (sharding.py) and how the processes of a multi-process job meet."""

from refinedweb_jax import sharding
from refinedweb_jax.config_keys.key import Key, Section

# data and fsdp split the batch, fsdp also the parameters and optimizer state, tensor the
# heads, FFN and vocabulary; one size may be -1 (the remaining devices).
MESH = Section("mesh", (
    Key("data", -1, "devices the batch is split over (-1: the remaining devices)",
        sharding.check_mesh_size),
    Key("fsdp", 1, "devices the batch, parameters and optimizer state are split over",
        sharding.check_mesh_size),
    Key("tensor", 1, "devices the heads, FFN and vocabulary are split over",
        sharding.check_mesh_size),
), resume=True)

# Multi-process runs on CPU/GPU clusters (unset: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
# JAX_PROCESS_ID, else one process; Cloud TPU VMs find each other by themselves). A
# resumed run takes its own start's: another start may run on another number of processes.
DISTRIBUTED = Section("distributed", (
    Key("coordinator_address", None, "host:port of process 0", type=str,
        example="10.0.0.2:1234"),
    Key("num_processes", None, "processes in the job", "(0, inf)", type=int),
    Key("process_id", None, "this process's number, from 0", "[0, inf)", type=int),
), resume=True)
