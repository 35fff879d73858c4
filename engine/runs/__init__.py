"""Rule runs: the state machine, stages, actions, stateful clauses, confirmation, schedules, alerts."""
