"""Once-per-period work across every worker machine: :func:`kulipa.scheduling.services.run_once`."""
