"""The apps service: notebooks published as Voila apps, their gallery (:mod:`.app`), their
store (:mod:`.store`) and ``hubforge apps`` (:mod:`.cli`)."""
