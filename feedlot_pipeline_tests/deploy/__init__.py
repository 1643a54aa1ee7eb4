"""Tests of deploy/: the CloudFormation templates, their policies, and moto deployments."""
