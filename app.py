"""TransferLab's browser app: `streamlit run app.py`. Each page is a function in pages/ that this script registers
with `st.Page(function, url_path=...)`; helpers live in ui/, the engine in tl_core/.

Personal mode (the default) shows the pages at once; on a workshop server nothing but the sign-in
screen is registered until someone signs in, and trainers get one more page. The page modules only define
functions: a request that Streamlit answers by running a `pages/` file itself (before this script's first run)
draws none of a page, and the file runs this script instead (ui.navigation.run_app_instead).
"""

import streamlit as st

from tl_core.errors import TransferLabError
from ui.choices import restore_choices, save_choices
from ui.cookies import draw_pending_cookies
from ui.listening import listening_problem
from ui.navigation import follow_interrupted_navigation, page_finished, register_pages
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
if problem := listening_problem(settings):
    st.error(problem, icon=":material/lan:")  # personal mode reachable from the network: serve nothing
    st.stop()
user = signed_in_user()
draw_pending_cookies()  # a session cookie set at sign-in, or deleted at sign-out, reaches the browser now
if user is None:
    # The sign-in screen is the only page: no URL reaches another page before someone signs in.
    register_pages({})
    sign_in = st.Page(sign_in_page, title="Sign in", icon=":material/login:", default=True)
    st.navigation([sign_in], position="hidden").run()
    st.stop()

# The pages after the gate, which the sign-in screen need not wait for (none imports TensorFlow: model work is
# done in worker processes, see tl_core.jobs.model_worker).
from pages.data import data_page  # noqa: E402
from pages.evaluate import evaluate_page  # noqa: E402
from pages.model import model_page  # noqa: E402
from pages.predict import predict_page  # noqa: E402
from pages.runs import runs_page  # noqa: E402
from pages.train import train_page  # noqa: E402
from pages.trainer import trainer_page  # noqa: E402
from ui.advisor import warm_up_cut_layers  # noqa: E402

pages = {
    "data": st.Page(data_page, title="Data", icon=":material/folder_open:", url_path="data", default=True),
    "model": st.Page(model_page, title="Model", icon=":material/tune:", url_path="model"),
    "train": st.Page(train_page, title="Train", icon=":material/monitoring:", url_path="train"),
    "runs": st.Page(runs_page, title="Runs", icon=":material/table_rows:", url_path="runs"),
    "evaluate": st.Page(evaluate_page, title="Evaluate", icon=":material/fact_check:", url_path="evaluate"),
    "predict": st.Page(predict_page, title="Predict & export", icon=":material/upload_file:", url_path="predict"),
}
if settings.sign_in_required and user.is_trainer:
    pages["trainer"] = st.Page(
        trainer_page, title="Trainer", icon=":material/admin_panel_settings:", url_path="trainer"
    )
register_pages(pages)
warm_up_cut_layers()  # once per server: starts the model worker, so the Model page does not wait for it
restore_choices()  # a reload or a new tab: this user's dataset, settings and run in view, from their workspace
page = st.navigation(list(pages.values()))
follow_interrupted_navigation(page)  # a click on another page that a typed box's commit undid
if settings.sign_in_required:
    show_account()  # before the page, so signing out works even when the page stops early
show_welcome()
try:
    page.run()
    page_finished(page)
finally:
    show_context()  # after the page, so a dataset or run picked during this run shows at once
    save_choices()
