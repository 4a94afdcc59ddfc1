"""miss-screen: is minimally invasive spine surgery worth discussing? Rule-based screening."""

__version__ = "0.1.0"
