"""What every stage runs on: errors with their fixes, the task protocol (progress, status,
cancel), work in child processes, online mode and plugins."""
