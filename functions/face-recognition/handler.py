"""OpenFaaS python3-http handler: recognise the faces in one object of the input bucket.

Request shapes and HTTP statuses are those of every facepipe function (facepipe/handlers.py):
200 with the people found, 422 with an error record for media that cannot be read, 400, 404,
503 (retry) and 500 (configuration error or bug).
"""

from facepipe.faces.task import FaceRecognitionTask
from facepipe.handlers import ObjectHandler

object_handler = ObjectHandler(FaceRecognitionTask)

handle = object_handler.handle
function = object_handler.function
warm_up = object_handler.warm_up
not_ready_reason = object_handler.not_ready_reason
