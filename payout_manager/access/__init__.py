"""Who calls, and what it may do (SPEC 5): the caller, the policy file and its decisions."""
