"""The job lifecycle: its states, every conditional state change, and the Job document."""
