"""Report: figures and the HTML report written next to every result."""
