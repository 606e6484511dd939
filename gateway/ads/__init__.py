"""Screens and ad rotation: the content model (`model`), the `ads.sync` store (`store`), the rotation
planner (`planner`), the `gateway ads` commands (`cli`) and the ad scorer (`scorer`)."""
