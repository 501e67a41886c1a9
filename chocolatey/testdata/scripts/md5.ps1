# An old package: MD5 (choco's default when no type is given).
$url = 'http://legacy.example.com/setup.exe'
Install-ChocolateyPackage 'legacy' 'exe' '/S' $url -checksum 'd41d8cd98f00b204e9800998ecf8427e'
Install-ChocolateyPackage -PackageName 'legacy-sha1' -FileType 'exe' -Url 'http://legacy.example.com/setup2.exe' -Checksum 'da39a3ee5e6b4b0d3255bfef95601890afd80709' -ChecksumType 'sha1'
