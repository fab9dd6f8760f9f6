"""The decision core of Nudge: pure Python + numpy/scipy, no database, queue or HTTP."""

from optimizer.arms import CHANNELS, Arm, Decision, Economics
from optimizer.policy import FixedSchedulePolicy, Policy

__all__ = ["CHANNELS", "Arm", "Decision", "Economics", "FixedSchedulePolicy", "Policy"]
