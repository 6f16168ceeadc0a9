"""A fake VMS Client API: the downloads list, logins and fault switches, on loopback.

It plays the VMS for tests, benchmarks and ``--demo``, and imports nothing from the
exporter, so that it stays an honest, independent peer.
"""

from vms_simulator.app import create_app
from vms_simulator.clock import Clock, ManualClock
from vms_simulator.config import Account, Faults, SimulatorConfig
from vms_simulator.server import RunningSimulator, start_simulator

__all__ = [
    "Account",
    "Clock",
    "Faults",
    "ManualClock",
    "RunningSimulator",
    "SimulatorConfig",
    "create_app",
    "start_simulator",
]
