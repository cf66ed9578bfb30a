"""The notebook scheduler: job definitions, their schedules (:mod:`.schedule`) and their runs'
records (:mod:`.store`). The service that fires and executes them comes next (issue 14)."""
