"""Ray Serve applications (solver endpoint, CLModel verifiers) live here; see later issues."""
