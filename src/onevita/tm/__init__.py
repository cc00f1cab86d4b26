"""Transfer-manager actions (``remotes/tm/vitastor/*``)."""
