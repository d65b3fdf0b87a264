"""Report writers and plots (matplotlib, PNG)."""
