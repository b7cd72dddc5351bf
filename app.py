"""TransferLab's browser app: `streamlit run app.py`. Pages live in app_pages/ (not pages/: Streamlit would serve that folder before app.py first runs), helpers in ui/, the engine in tl_core/.

Personal mode (the default) shows the pages at once; on a workshop server nothing but the sign-in
screen is drawn until someone signs in, and trainers get one more page.
"""

import streamlit as st

from tl_core.errors import TransferLabError
from ui.cookies import draw_pending_cookies
from ui.sidebar import show_account, show_context
from ui.signin import show_welcome, sign_in_page
from ui.state import server_settings, signed_in_user
from ui.text import show_error

st.set_page_config(page_title="TransferLab", page_icon=":material/model_training:", layout="wide")

try:
    settings = server_settings()
except TransferLabError as exc:
    show_error(exc)  # a bad transferlab.toml or TRANSFERLAB_* variable: say which, draw nothing else
    st.stop()
user = signed_in_user()
draw_pending_cookies()  # a session cookie set at sign-in, or deleted at sign-out, reaches the browser now
if user is None:
    # The sign-in screen is the only page: no URL reaches another page before someone signs in.
    st.navigation([st.Page(sign_in_page, title="Sign in", icon=":material/login:", default=True)], position="hidden").run()
    st.stop()

pages = [
    st.Page("app_pages/data.py", title="Data", icon=":material/folder_open:", default=True),
    st.Page("app_pages/model.py", title="Model", icon=":material/tune:"),
    st.Page("app_pages/train.py", title="Train", icon=":material/monitoring:"),
    st.Page("app_pages/runs.py", title="Runs", icon=":material/table_rows:"),
    st.Page("app_pages/evaluate.py", title="Evaluate", icon=":material/fact_check:"),
    st.Page("app_pages/predict.py", title="Predict & export", icon=":material/upload_file:"),
]
if settings.sign_in_required and user.is_trainer:
    pages.append(st.Page("app_pages/trainer.py", title="Trainer", icon=":material/admin_panel_settings:"))
page = st.navigation(pages)
if settings.sign_in_required:
    show_account()  # before the page, so signing out works even when the page stops early
show_welcome()
try:
    page.run()
finally:
    show_context()  # after the page, so a dataset or run picked during this run shows at once
