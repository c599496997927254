"""The courier: supplier price lists fetched byte for byte and handed to ml-analyze."""
