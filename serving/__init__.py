"""The BentoML prediction service of ctloop: `bentoml serve serving.service:ModelService`."""
