#include "CCurlShim.h"

const char *sy_curl_version(void) { return curl_version(); }

int sy_curl_has_feature(int feature_bit) {
    curl_version_info_data *info = curl_version_info(CURLVERSION_NOW);
    return (info->features & feature_bit) != 0;
}
