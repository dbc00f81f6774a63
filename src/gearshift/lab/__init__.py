"""The lab: offline evaluation, training and calibration of routers on recorded outcomes."""
