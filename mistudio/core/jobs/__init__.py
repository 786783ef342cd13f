"""The app's jobs: every long operation declared once with where it runs (kinds), the executor
that runs them (center), the model services shared by every tab (services), and the self-test
that drives them like the app does."""
