"""Tests of the study engine: spec validation, the driver's refusals, whole studies through Ray and MLflow."""
