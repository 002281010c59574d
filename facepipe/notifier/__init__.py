"""The notifier: bucket notifications in, function invocations out, and the reconciler."""
