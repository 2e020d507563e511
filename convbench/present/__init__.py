"""How results are shown: Markdown tables, plots, the HTML/Markdown report."""
