"""Events: the wire form of payout changes, as stored, served and published."""
