"""The app's screens: browser, checkpoint view, loss comparison, help."""
