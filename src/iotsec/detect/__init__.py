"""Detection as data: rules as policy-as-code (rules.py) and the detector that turns the
broker's telemetry into detections (engine.py). Pure: no store, no files, no clock."""
