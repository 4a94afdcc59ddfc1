"""miss-screen: rule-based screening of whether minimally invasive spine surgery is worth discussing."""

__version__ = "0.1.0"
