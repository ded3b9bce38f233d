"""Built-in datasets, uploaded dataset files, and the catalog that finds either for a job."""
