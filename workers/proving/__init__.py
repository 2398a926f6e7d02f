"""The product proving itself: the #670 stress race, crash chaos and its audit, the demo.

Layer: imports every library layer; nothing but ``ltxpool.cli`` imports it, and it
never imports ``ltxpool.cli`` (it runs the installed command as a subprocess).
"""

from __future__ import annotations

from ltxpool.proving.chaos import ChaosConfig, ChaosReport, run_chaos
from ltxpool.proving.chaos_audit import audit
from ltxpool.proving.demo import run_demo
from ltxpool.proving.stress import StressConfig, run_stress

__all__ = ["ChaosConfig", "ChaosReport", "StressConfig", "audit", "run_chaos", "run_demo", "run_stress"]
