"""Report: effects with intervals, tables and figures from the stages' outputs."""
