"""Analyses: a job per member of a group or query result (*map*), or one job over all (*reduce*).

The API records a request (``records``) and sends one ``analysis.requested`` message; the
analyst (``nps worker analyses``) plans it and queues its jobs a step at a time (``fanout``),
so an analysis carries on whatever happens to the API. ``plan`` is the pure part (members to
job specs), ``status`` what a requester sees.
"""

from nps.analyses.fanout import Analyst
from nps.analyses.model import Analysis, AnalysisNotFound, AnalysisState, Member, Progress
from nps.analyses.records import AnalysisRecords

__all__ = ["Analysis", "AnalysisNotFound", "AnalysisRecords", "AnalysisState", "Analyst", "Member", "Progress"]
