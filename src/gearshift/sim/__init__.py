"""The lifecycle simulation: a routing policy's whole life (observe, shadow, prove, promote, watch,
demote) replayed over a recorded stream, through the gateway's own code, over many seeds."""

from gearshift.sim.run import Event, Run, Simulation, priced, simulate

__all__ = ["Event", "Run", "Simulation", "priced", "simulate"]
