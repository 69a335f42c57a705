class ReadOnlyAdminMixin:
    """For records that the pipeline owns: an edit in the admin would corrupt its state."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
