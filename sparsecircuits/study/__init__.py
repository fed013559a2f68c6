"""Study: sparse vs dense models, circuit size against task loss (the paper's Figure 2)."""

from .compare import DEFAULT_TARGETS, compare, format_summary, plot_frontier

__all__ = ["DEFAULT_TARGETS", "compare", "format_summary", "plot_frontier"]
