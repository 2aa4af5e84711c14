"""The five-step disaster recovery: a plan, each step timed against the seed's targets."""
