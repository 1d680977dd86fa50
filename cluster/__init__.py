"""The server as a Ray Serve application: N replicas of the same FastAPI app, one model each (see README,
Scaling out). Ray is an optional extra (requirements-cluster.txt); nothing outside this package imports it."""
