"""The app's pages, one module per step; each defines its page as a function that app.py registers with
`st.Page(function, url_path=...)`, so importing a module draws nothing (see ui.navigation.run_app_instead)."""
