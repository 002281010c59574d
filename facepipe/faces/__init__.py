"""Face recognition: known faces, the face encoder, detection and matching, the students table."""
