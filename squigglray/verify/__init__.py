"""Mechanical verification helpers: a deadline-enforcing worker process for SymPy/Z3 work."""
