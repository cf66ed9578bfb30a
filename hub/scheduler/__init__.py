"""The notebook scheduler: the service (:mod:`.app`) that fires jobs on their schedules
(:mod:`.schedule`), runs them through papermill as their owners (:mod:`.runner`) and keeps
their definitions and runs (:mod:`.store`)."""
