"""Bridges between a dense model and a weight-sparse one: training, storage, steering."""

from .core import BridgeConfig, Bridges, bridged_loss, evaluate_bridges, nmse
from .steer import Steering, SteeringOnPairs, steer, steer_pairs
from .store import has_bridges, load_bridges, load_dense, read_bridge_config

__all__ = ["BridgeConfig", "Bridges", "bridged_loss", "evaluate_bridges", "has_bridges",
           "load_bridges", "load_dense", "nmse", "read_bridge_config", "Steering",
           "SteeringOnPairs", "steer", "steer_pairs"]
