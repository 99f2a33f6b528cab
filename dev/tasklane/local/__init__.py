"""The local stack: the whole pipeline on one machine without Docker or AWS.

Postgres from the machine's binaries, moto's SQS server, and emulations of what AWS does around
the functions (HTTP API, SQS event source mappings, schedules), all driven by ``template.yaml``.
"""
