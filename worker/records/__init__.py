"""The agency's books (issue #12): the settlement-records service that copies the worker's outcome
events into PostgreSQL exactly once, and what is read from there — facility statements and
reconciliation, the agency's monthly settlement statement, fund statistics, early-warning indicators
and the monthly report."""
