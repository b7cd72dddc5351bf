"""Data: upload or pick a labelled image or text dataset, then check it before training."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from tl_core.config import ConfigError
from tl_core.data.demo import DEMO_DATASETS, write_demo_dataset
from tl_core.errors import TransferLabError
from tl_core.modalities import get_modality
from tl_core.server.accounts import User
from tl_core.server.workspaces import Workspaces
from ui.charts import class_counts_chart
from ui.dataset import DatasetView, document_samples, load_dataset, problem_groups, sample_paths, split_table
from ui.images import Tile, show_tiles
from ui.label_review import show_label_review
from ui.navigation import page_link, run_app_instead
from ui.state import (
    REFUSED_DATASET_KEY,
    current_dataset,
    current_modality,
    current_user,
    datasets_dir,
    display_path,
    is_workshop,
    set_current_dataset,
    uploads_dir,
    user_workspace,
    workspace_path,
    workspaces,
)
from ui.text import escape_markdown, safe_label, show_error, user_message
from ui.uploads import (
    ARCHIVE_SUFFIXES,
    TABLE_SUFFIXES,
    dataset_choices,
    save_uploaded_file,
    save_uploaded_folder,
    upload_size,
)

SAMPLES_PER_CLASS = 6
DOCUMENTS_PER_CLASS = 3
SAMPLE_CHARACTERS = 200
SEVERITY_ICONS = {"error": ":material/error:", "warning": ":material/warning:", "info": ":material/info:"}
OWN_TARGET = "My datasets"
SHARED_TARGET = "Shared datasets (all students)"


def upload_folder(user: User) -> Path:
    """Where this upload goes: the user's datasets; trainers on a workshop server may pick the shared folder."""
    if is_workshop() and user.is_trainer and st.session_state.get("data_upload_target") == SHARED_TARGET:
        return datasets_dir()
    return uploads_dir()


def check_room(spaces: Workspaces, user: User, size_bytes: int) -> bool:
    """False (with the reason shown) when an upload is over the server's limit or the user's disk quota."""
    try:
        spaces.check_upload(user.name, size_bytes)
    except TransferLabError as exc:
        show_error(exc)
        return False
    return True


def upload_folder_tab(spaces: Workspaces, user: User) -> None:
    """A folder of class folders from the browser."""
    files = st.file_uploader(
        "Folder with one sub-folder per class",
        accept_multiple_files="directory",
        key="data_folder_files",
        help="Choose the folder that holds the class folders, e.g. flowers/ with roses/ and tulips/ inside, "
        "or news/ with sport/ and politics/ full of .txt files.",
    )
    folder_name = st.text_input(
        "Dataset name (optional)",
        key="data_folder_name",
        placeholder="the folder's own name",
        help="Saved under the workspace's datasets/ folder; an existing name gets a suffix.",
    )
    if st.button("Use this folder", key="data_folder_save", type="primary", disabled=not files) and check_room(
        spaces, user, upload_size(files or [])
    ):
        try:
            saved = save_uploaded_folder(files or [], upload_folder(user), folder_name or None)
        except (OSError, TransferLabError) as exc:  # a full disk, or the quota filled by another tab's upload meanwhile
            show_error(exc)
        else:
            spaces.forget_usage(user.name)
            set_current_dataset(saved.root)
            st.success(f"Saved {saved.saved} files as dataset {escape_markdown(saved.root.name)}.")
            for name, reason in saved.rejected:
                st.warning(f"Skipped {escape_markdown(name)}: {reason}.")


def upload_archive_tab(spaces: Workspaces, user: User) -> None:
    """An archive of the dataset folder, or a CSV/TSV table."""
    archive = st.file_uploader(
        "A .zip or .tar(.gz) of the dataset folder, or a CSV/TSV table",
        type=[s.lstrip(".") for s in (*ARCHIVE_SUFFIXES, *TABLE_SUFFIXES)],
        key="data_archive_file",
        help="The archive may hold the class folders directly or one folder that holds them. A CSV/TSV needs a text column "
        "(named text, review, ...) and a label column (named label, class, ...) in its first row.",
    )
    if st.button("Use this archive", key="data_archive_save", type="primary", disabled=archive is None) and check_room(
        spaces, user, upload_size([archive])
    ):
        try:
            saved_path = save_uploaded_file(archive, upload_folder(user))
        except (OSError, TransferLabError) as exc:  # a full disk, or the quota filled by another tab's upload meanwhile
            show_error(exc)
        else:
            spaces.forget_usage(user.name)
            set_current_dataset(saved_path)
            st.success(f"Saved {escape_markdown(saved_path.name)}; it is unpacked when scanned.")


def server_folder_tab(spaces: Workspaces, user: User) -> None:
    """A dataset already on the server: any folder in personal mode, the user's own and the shared ones on a workshop server."""
    if not is_workshop():
        root = datasets_dir()
        choices = dataset_choices(root)
        st.caption(
            f"Folders and archives in {escape_markdown(root)} (set TRANSFERLAB_DATASETS_DIR to use another folder)."
        )
        if choices:
            chosen = st.selectbox(
                "Dataset",
                choices,
                key="data_server_choice",
                format_func=safe_label,
                help="Each entry is a folder of class folders, an archive or a CSV/TSV table.",
            )
            if st.button("Use this dataset", key="data_server_use", type="primary"):
                set_current_dataset(root / chosen)
        else:
            st.info("No datasets on the server yet: upload one, or write a demo dataset.")
        return
    # Names only: each resolves inside its own folder (safe_join), so no name reaches another user's files.
    sources = [("shared", name) for name in dataset_choices(datasets_dir())] + [
        ("mine", name) for name in dataset_choices(uploads_dir())
    ]
    st.caption("Your own uploads, and the shared datasets your trainer put on the server.")
    if sources:
        source, name = st.selectbox(
            "Dataset",
            sources,
            key="data_server_choice",
            help="Each entry is a folder of class folders, an archive or a CSV/TSV table.",
            format_func=lambda item: f"{safe_label(item[1])} ({'shared' if item[0] == 'shared' else 'yours'})",
        )
        if st.button("Use this dataset", key="data_server_use", type="primary"):
            try:
                path = spaces.server_dataset_path(name) if source == "shared" else user_workspace().dataset_path(name)
                set_current_dataset(spaces.check_readable(user, path))
            except TransferLabError as exc:
                show_error(exc)
    else:
        st.info("No datasets yet: upload one, or write a demo dataset.")


def demo_tab(spaces: Workspaces, user: User) -> None:
    """A small demo dataset written from data shipped with installed packages."""
    demo_name = st.selectbox(
        "Demo dataset",
        list(DEMO_DATASETS),
        key="data_demo_choice",
        format_func=lambda name: f"{name} — {len(DEMO_DATASETS[name].classes)} classes",
        help="Small datasets built from data shipped with installed packages; nothing is downloaded.",
    )
    demo = DEMO_DATASETS[demo_name]
    st.caption(f"{demo.description} Source: {demo.source_package}. Licence: {demo.licence}.")
    demo_noun = f"{get_modality(demo.modality).noun}s"
    count = st.slider(
        f"{demo_noun.capitalize()} per class",
        10,
        demo.images_per_class,
        min(60, demo.images_per_class),
        step=5,
        key="data_demo_count",
        help=f"Fewer {demo_noun} train faster; 60 per class trains in under a minute on a laptop.",
    )
    if st.button("Write and use this demo", key="data_demo_write", type="primary"):
        try:
            spaces.check_disk(user.name)
            with st.spinner(f"Writing the demo {demo_noun}…"):
                written = write_demo_dataset(
                    upload_folder(user) / f"demo-{demo_name}-{count}", demo_name, images_per_class=count
                )
        except TransferLabError as exc:
            show_error(exc)
        else:
            spaces.forget_usage(user.name)
            set_current_dataset(written)


def show_image_samples(view: DatasetView) -> None:
    """A few thumbnails per class."""
    for label, paths in sample_paths(view.report, SAMPLES_PER_CLASS).items():
        st.text(safe_label(label))
        show_tiles([Tile(path) for path in paths], width=72)


def show_document_samples(view: DatasetView) -> None:
    """The beginning of a few documents per class, and how long the documents are."""
    stats = view.report.size_stats
    if stats:
        st.caption(
            f"Text dataset. Document length: median {stats['height_median']:.0f} words "
            f"(shortest {stats['height_min']:.0f}, longest {stats['height_max']:.0f}); "
            "the model reads the first words of each, as many as set on the Model page."
        )
    samples = document_samples(view.report, DOCUMENTS_PER_CLASS, SAMPLE_CHARACTERS)
    # A table shows its cells as plain text, so nothing in a document is read as Markdown or HTML.
    table = pd.DataFrame(
        [
            {"class": safe_label(s.label), "document": safe_label(s.file), "beginning": user_message(s.beginning)}
            for s in samples
        ],
        columns=["class", "document", "beginning"],
    )
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={"beginning": st.column_config.TextColumn("beginning", width="large")},
    )


FULL_TEXT_PROBLEM_ROWS = 30  # problems of one kind shown in full; more go into a scrolling table
SAMPLE_VIEWS = {"thumbnails": show_image_samples, "excerpts": show_document_samples}  # by `DataModality.preview`


def show_report(view: DatasetView) -> None:
    """Class counts, thumbnails or document beginnings, problems (errors first) and the train/val/test split."""
    report, noun = view.report, view.noun
    errors, warnings = len(report.errors), len(report.warnings)
    cols = st.columns(4)
    cols[0].metric("Classes", len(report.class_names))
    cols[1].metric(f"{noun.capitalize()}s", len(report.examples))
    cols[2].metric("Errors", errors)
    cols[3].metric("Warnings", warnings)
    if view.split is None:
        st.error(
            "This dataset cannot be trained on yet: "
            + escape_markdown(user_message(view.split_error or "see Problems below.")),
            icon=":material/error:",
        )
    else:
        coverage = view.split.coverage_problems(noun)
        if errors:
            st.warning(
                f"{errors} problem(s) leave classes out of training: see Problems below to include them.",
                icon=":material/warning:",
            )
        if coverage:
            st.warning(
                "Trainable, but not every class is in every split. "
                + " ".join(escape_markdown(message) for message in coverage),
                icon=":material/call_split:",
            )
        if not errors and not coverage:
            worth_reading = f" {warnings} warning(s) below are worth reading first." if warnings else ""
            st.success(
                f"The dataset is ready to train on.{worth_reading} Next: choose a model.",
                icon=":material/check_circle:",
            )
        page_link("model", "Choose a model", ":material/arrow_forward:")

    st.subheader(f"{noun.capitalize()}s per class")
    if report.class_counts:
        st.altair_chart(class_counts_chart(report.class_counts), width="stretch")
    if report.excluded_classes:
        st.caption("Left out of training (see Problems below): " + escape_markdown(", ".join(report.excluded_classes)))

    st.subheader("Samples")
    SAMPLE_VIEWS[get_modality(view.modality).preview](view)

    st.subheader("Problems")
    groups = problem_groups(report)
    if not groups:
        st.caption("No problems found.")
    for severity, kind, table in groups:
        with st.expander(
            f"{severity}: {kind} ({len(table)})", expanded=severity == "error", icon=SEVERITY_ICONS.get(severity)
        ):
            if len(table) <= FULL_TEXT_PROBLEM_ROWS:  # a static table wraps the advice instead of cutting it off
                st.table(table.set_index("file"))
            else:
                st.dataframe(
                    table,
                    hide_index=True,
                    width="stretch",
                    column_config={"what to do": st.column_config.TextColumn("what to do", width="large")},
                )

    st.subheader("Split")
    if view.split is not None:
        sizes = view.split.sizes()
        st.caption(
            f"Train {sizes.get('train', 0)} · validation {sizes.get('val', 0)} · test {sizes.get('test', 0)} {noun}s, "
            "split per class with a fixed seed"
            + (" (the dataset's own train/val/test folders)." if report.has_preset_splits else ".")
        )
        st.dataframe(split_table(view.split), hide_index=True, width="stretch")


def data_page() -> None:
    """The Data page: four ways to pick a dataset, then the chosen one's report."""
    st.title("Data")
    st.caption(
        "Images or text documents (.txt) sorted into one folder per class — the folder name is the label — or a CSV/TSV "
        "table with a text and a label column. Pick a dataset in one of four ways; TransferLab tells images from text "
        "and checks the dataset before you train."
    )
    user = current_user()
    spaces = workspaces()
    current_dataset()  # checks a stored choice first, so a refused one is explained right here
    refused = st.session_state.pop(REFUSED_DATASET_KEY, None)
    if refused:
        st.error(escape_markdown(refused), icon=":material/block:")
    if is_workshop() and user.is_trainer:
        st.radio(
            "Save uploads and demos to",
            [OWN_TARGET, SHARED_TARGET],
            key="data_upload_target",
            horizontal=True,
            help="Shared datasets are readable by every student; only trainers can add to them.",
        )

    tabs = st.tabs(
        [
            ":material/drive_folder_upload: Upload a folder",
            ":material/folder_zip: Upload an archive",
            ":material/dns: Folder on the server",
            ":material/auto_awesome: Demo dataset",
        ]
    )
    for tab, draw in zip(tabs, (upload_folder_tab, upload_archive_tab, server_folder_tab, demo_tab)):
        with tab:
            draw(spaces, user)

    dataset = current_dataset()
    st.divider()
    if not dataset:
        st.info(
            "No dataset chosen yet: upload a folder or an archive, pick one on the server, or try a demo dataset.",
            icon=":material/info:",
        )
        return
    st.header("Report")
    st.text(f"Dataset: {safe_label(display_path(dataset))}")
    try:
        modality = current_modality()
        with st.spinner(get_modality(modality).scanning_message):
            dataset_view = load_dataset(dataset, workspace_path(), modality)
    except (TransferLabError, ConfigError) as exc:
        show_error(exc)
    else:
        show_report(dataset_view)
        show_label_review(dataset_view, dataset)


if __name__ == "__main__":  # Streamlit ran this file itself instead of app.py: see ui.navigation.run_app_instead
    run_app_instead()
