"""Accounts, roles and the acting person: who may call which application service.

`permissions` names every permission and the shipped roles; `actor` carries the person (or
token, or local CLI user) on whose behalf a service runs; `policy` says which permission each
application-service method needs. Checks and audit records are made in the service layer, so the
CLI, the REST API and the console cannot differ.
"""
